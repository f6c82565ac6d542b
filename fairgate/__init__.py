"""fairgate: a fairness release gate for compressed models (teacher vs student)."""

__version__ = "0.1.0"
