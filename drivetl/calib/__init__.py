"""drivetl.calib."""
