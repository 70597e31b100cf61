import CBLAS
import CPNG
import CZstd
import Testing

/// The three system libraries link and work (the set-up installs them from Debian).
@Suite struct SystemLibraryTests {
  @Test func openBLASMultiplies() {
    let a: [Float] = [1, 2, 3, 4]  // [[1,2],[3,4]]
    let b: [Float] = [5, 6, 7, 8]  // [[5,6],[7,8]]
    var c = [Float](repeating: 0, count: 4)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, b, 2, 0, &c, 2)
    #expect(c == [19, 22, 43, 50])
  }

  @Test func zstdRoundTrips() {
    let input = Array("rouwei rouwei rouwei rouwei".utf8)
    var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
    let size = ZSTD_compress(&compressed, compressed.count, input, input.count, 3)
    #expect(ZSTD_isError(size) == 0)
    var output = [UInt8](repeating: 0, count: input.count)
    let restored = ZSTD_decompress(&output, output.count, compressed, size)
    #expect(restored == input.count && output == input)
  }

  @Test func libpngIsVersion16() {
    let version = String(cString: png_get_libpng_ver(nil))
    #expect(version.hasPrefix("1.6"))
  }
}
