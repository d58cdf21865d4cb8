"""The public C headers of fastinterp (``fastinterp/plugin.h``); see ``fastinterp.get_include()``."""
