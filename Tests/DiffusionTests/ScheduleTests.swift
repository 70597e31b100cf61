import Foundation
import Testing

@testable import Diffusion

@Suite struct ScheduleTests {
  static let golden = (try? Goldens.json("schedules.json")) ?? [:]

  static let tables: [(String, ZeroTerminalSNR?)] = [
    ("plain", nil), ("ztsnrComfyUI", .comfyUI), ("ztsnrDiffusers", .diffusers),
  ]

  @Test func referenceValues() throws {
    let schedule = DiscreteNoiseSchedule.sdxl()
    #expect(abs(schedule.sigmaMin - 0.029167) < 1e-6)
    #expect(abs(schedule.sigmaMax - 14.614641) < 1e-5)
    #expect(abs(DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: .comfyUI).sigmaMax - 4518.76) < 0.01)
    #expect(abs(DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: .diffusers).sigmaMax - 4096) < 0.01)
    let normal = try schedule.sigmas(steps: 10, scheduler: .normal)
    let expected: [Float] = [
      14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0,
    ]
    #expect(zip(normal, expected).allSatisfy { abs($0 - $1) < 1e-4 })
    #expect(throws: DiffusionError.self) { try schedule.sigmas(steps: 0, scheduler: .karras) }
  }

  @Test(arguments: [0, 1, 2])
  func tablesAndSchedulers(tableIndex: Int) throws {
    let (name, zsnr) = Self.tables[tableIndex]
    let golden = Self.golden.object(name)
    let schedule = DiscreteNoiseSchedule.sdxl(zeroTerminalSNR: zsnr)
    #expect(worstRelativeError(schedule.sigmas, golden.floats("sigmas")) < 1e-6, "\(name)")
    #expect(worstRelativeError(schedule.logSigmas, golden.floats("logSigmas")) < 1e-6, "\(name)")
    let schedules = golden.object("schedules")
    #expect(schedules.count == 5)
    for (steps, lists) in schedules {
      guard let steps = Int(steps), let lists = lists as? [String: Any] else { continue }
      for scheduler in SigmaScheduler.allCases {
        let expected = lists.floats(scheduler.rawValue)
        let actual = try schedule.sigmas(steps: steps, scheduler: scheduler)
        #expect(actual.count == expected.count, "\(name) \(scheduler) \(steps)")
        let error =
          zip(actual, expected).map {
            abs(Double($0) - Double($1)) / max(Double(abs($1)), 1e-30)
          }.max() ?? 0
        #expect(error < 1e-6, "\(name) \(scheduler) \(steps): \(actual) vs \(expected)")
      }
    }
    let sigmaAt = golden.object("sigmaAt")
    for (t, sigma) in zip(sigmaAt.floats("t"), sigmaAt.floats("sigma")) {
      let actual = schedule.sigma(timestep: t)
      #expect(abs(actual - sigma) / sigma < 1e-6, "\(name) sigma(\(t))")
    }
    let timestepOf = golden.object("timestepOf")
    for ((sigma, nearest), interpolated) in zip(
      zip(timestepOf.floats("sigma"), timestepOf.ints("nearest")), timestepOf.floats("interpolated")
    ) {
      #expect(schedule.nearestTimestep(sigma: sigma) == nearest, "\(name) t(\(sigma))")
      #expect(
        abs(schedule.interpolatedTimestep(sigma: sigma) - interpolated) < 1e-3,
        "\(name) t(\(sigma))")
    }
  }
}
