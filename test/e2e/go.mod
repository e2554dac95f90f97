module github.com/gomon-dev/gomon/test/e2e

go 1.26.0
