"""Runtime: the device registry (``devices``), GPU arrays (``arrays``) and the disk cache (``cache``)."""
