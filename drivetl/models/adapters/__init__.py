"""drivetl.models.adapters."""
