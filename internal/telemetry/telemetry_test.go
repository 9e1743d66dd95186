package telemetry

import (
	"context"
	"testing"
)

func TestSetupExportsOnlyWhenAskedTo(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, false},
		{"otlp without endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"console exporter", map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// autoexport reads the process environment itself.
			for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
				t.Setenv(k, tt.env[k])
			}
			getenv := func(k string) string { return tt.env[k] }
			tr, err := Setup(context.Background(), getenv, "test")
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer tr.Shutdown(context.Background())
			_, span := tr.Provider.Tracer("t").Start(context.Background(), "s")
			if got := span.IsRecording(); got != tt.want {
				t.Fatalf("span recording = %v, want %v (no-op unless exporting)", got, tt.want)
			}
			span.End()
		})
	}
}
