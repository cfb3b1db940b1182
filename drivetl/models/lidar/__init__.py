"""drivetl.models.lidar."""
