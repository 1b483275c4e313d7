//go:build tools

// Package tools pins the Dex OpenID provider (v2.45.1) as a dependency of this
// wrapper module so that scripts/install-dex.sh can build it with `go build`.
// `go install github.com/dexidp/dex/cmd/dex@<version>` does not work because
// Dex's own go.mod has a replace directive (api/v2 => ./api/v2); replace
// directives of dependencies are ignored, so here api/v2 v2.4.0 is used instead.
package tools

import _ "github.com/dexidp/dex/cmd/dex"
