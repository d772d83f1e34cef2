"""hubedge benchmarks: latency and agreement with the FP32 reference, per artifact, precision and device.

``hubedge bench`` runs every artifact through the same ``runtimes.load(...).predict()`` users call, beside
the TF reference measured in the same run, so every figure can be read as a ratio to that reference.
"""
