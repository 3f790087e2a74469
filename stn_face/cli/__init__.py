"""The ``stn-face-*`` commands: one thin file each, all built on :mod:`stn_face.cli.entry`."""
