"""drivetl.models.heads."""
