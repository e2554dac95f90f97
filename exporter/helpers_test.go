package exporter

import (
	"os"

	"go.opentelemetry.io/otel/attribute"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func osGetpid() int { return os.Getpid() }

func attributeKey(k string) attribute.Key { return attribute.Key(k) }
