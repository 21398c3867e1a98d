# overlayfs.systemd: the two commands a newcomer needs.
#   make demo   build the bench, boot a systemd container, apply playbooks/demo.yml, reboot, show what survived
#   make test   every check: lint, sanity, unit tests, collection build, molecule scenarios
#   make lint   ruff, yamllint and ansible-lint only (no Docker, no root)
#   make units  everything but the molecule scenarios and the VM tests
.PHONY: test demo demo-clean bench lint units

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

demo-clean:
	bash scripts/demo.sh clean

bench:
	bash scripts/bench.sh up

lint:
	bash scripts/lint.sh

units:
	OVERLAYFS_SKIP_MOLECULE=1 bash scripts/test.sh
