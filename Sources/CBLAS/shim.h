#include <cblas.h>
#include <stddef.h>

// LAPACK's divide-and-conquer SVD, as OpenBLAS exports it (Fortran calling convention: every
// argument by pointer, column-major matrices, the trailing hidden length of the character
// argument). cblas.h does not declare LAPACK.
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s, float *u,
             const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork, int *iwork, int *info,
             size_t jobz_length);
