"""The quantization stage: calibration images (``calibration``), accuracy targets (``accuracy_target``) and the
accuracy-aware search that keeps the fewest layers float to meet one (``accuracy``). The formats call it; it knows
no format."""
