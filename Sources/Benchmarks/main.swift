print("benchmarks: see Scripts/bench")
