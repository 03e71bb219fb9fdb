"""Parity with the reference GLIDE code: fixture checks (`core` registry, `models`, `sampling`)
and `run.run_parity` over a fixture directory (`glide-eval parity`)."""
