import Foundation
import Tensors
import TestSupport

/// A deterministic normal(0, σ) tensor (splitmix64 → Box–Muller), different for each seed.
func randomTensor(_ shape: Shape, seed: UInt64, scale: Float = 1) -> Tensor {
  var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
  func next() -> Double {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return (Double(z >> 11) + 0.5) / Double(1 << 53)
  }
  var values = [Float]()
  values.reserveCapacity(shape.count)
  for _ in 0..<shape.count {
    let radius = (-2 * Foundation.log(next())).squareRoot()
    values.append(Float(radius * Foundation.cos(2 * Double.pi * next())) * scale)
  }
  return Tensor(shape: shape, values: values)
}

/// One pool for every test (tests run concurrently; the pool runs their jobs one at a time).
let testPool = ThreadPool(threadCount: 2)

/// A fresh context with the optimised kernels (each has its own workspace, which tests running
/// concurrently must not share).
var fast: ComputeContext { ComputeContext(pool: testPool) }

/// A fresh context running the reference loops.
var reference: ComputeContext { ComputeContext(pool: testPool, referenceKernels: true) }

/// NMSE of `actual` against `expected`, with the description for failure messages.
func closeness(_ actual: Tensor, _ expected: Tensor) -> Closeness {
  Closeness(actual.scalars, expected.scalars)
}

/// A copy of `tensor` with its own storage.
func clone(_ tensor: Tensor) -> Tensor { Tensor(shape: tensor.shape, values: tensor.scalars) }
