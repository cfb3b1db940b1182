"""drivetl.models.camera."""
