"""Runtime: devices and (later) the compilation cache."""
