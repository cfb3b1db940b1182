"""drivetl: pretrain LiDAR and camera encoders on Waymo-format data, adapt them to your own rig.

Importing this package is cheap: it loads no CUDA extension, no open3d and no Waymo protobuf
module. Heavy parts are imported lazily by the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
