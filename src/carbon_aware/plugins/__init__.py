"""The Carbon page, registered through the provider's ``get_provider_info``."""
