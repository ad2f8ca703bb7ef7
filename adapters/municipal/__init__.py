"""The municipality's format: iWmo-style XML registrations."""
