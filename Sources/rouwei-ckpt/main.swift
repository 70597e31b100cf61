import CLI
import Tensors

// Before anything else: an OpenBLAS older than the CPU runs its slowest kernels (BLASCore).
BLASCore.relaunchIfMisdetected()
RootCommand.main()
