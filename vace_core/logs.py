"""The pack's one logger: the core and the nodes log under one name, so a user (or a host) filters or
raises the level of one logger, whatever folder name ComfyUI imported the pack under."""

import logging

LOGGER_NAME = "longlive_vace"
log = logging.getLogger(LOGGER_NAME)
