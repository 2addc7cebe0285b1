"""One router per context; each route decodes, delegates to its service, answers the envelope."""
