.PHONY: up test help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

up:  ## install (locked) and bring the product up on its defaults
	scripts/up

test:  ## install (locked) and run the whole quality gate and test suite
	scripts/test
