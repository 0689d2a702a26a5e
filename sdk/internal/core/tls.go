package core

import (
	"sync"

	"github.com/manta-ray/manta/internal/tlsconfig"
)

// processTLS is this process's TLS identity, from MANTA_TLS_CA,
// MANTA_TLS_CERT and MANTA_TLS_KEY (a raylet sets them for its workers and
// job drivers); nil when they are unset, which means TLS off. Read once:
// the Source itself reloads rotated files.
var processTLS = sync.OnceValues(func() (*tlsconfig.Source, error) {
	return tlsconfig.LoadOptional(tlsconfig.FilesFromEnv(), nil)
})
