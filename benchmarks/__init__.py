"""stn_face's speed benchmarks, outside the library package (they run from a source checkout).

``cpu`` (``stn-face-bench``, ``make bench``) is the CPU suite, one module per section (``overhead``,
``stn_pipeline``, ``evaluation``, ``precision``) over shared ``common`` helpers and the two ``loops``
(Lightning and the bare loop); ``gpu`` times the model on one GPU; ``gpu_check`` (``make gpu-check``)
runs the whole GPU path.
"""
