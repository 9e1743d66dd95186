// Package api embeds the OpenAPI description of the public listener, served
// at /openapi.yaml.
package api

import _ "embed"

// OpenAPI is api/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
