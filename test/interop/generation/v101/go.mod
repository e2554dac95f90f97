module github.com/gomon-dev/gomon/test/interop/generation

go 1.26.0
