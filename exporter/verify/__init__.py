"""The verification stage, after a format has written its file: the FP32 reference shared within a catalog run
(``shared_reference``), other CPU classes under emulation (``cpu_emulation``, ``arm64_env``), the mobile SDK's
check (``mobile_sdk``), the vendors' deployability report (``deployability``), and what follows when int8 misses
its floor (``fallback``)."""
