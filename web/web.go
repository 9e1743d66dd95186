// Package web embeds the demo page of sse-service: a small, dependency-free
// HTML/CSS/JavaScript page that shows the server clock pushed over
// Server-Sent Events, and lets a visitor subscribe to a topic and publish
// events to it. The page loads nothing from the network and works under a
// strict Content-Security-Policy of default-src 'self'.
package web

import "embed"

// Static holds the demo page and its assets, served at /.
//
// The files live under the "static" directory of the file system; serve
// them from the root with fs.Sub(Static, "static").
//
//go:embed static
var Static embed.FS
