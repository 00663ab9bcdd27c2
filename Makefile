# Thin wrappers over the npm scripts, so `make test` and `make bench` work as the README says.
.PHONY: build test bench demo clean

build:
	npm run build

test:
	npm test

bench:
	npm run bench

demo: build
	npm run demo

clean:
	rm -rf dist src/generated
