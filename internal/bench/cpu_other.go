//go:build !unix

package bench

import "time"

// selfCPU is unknown here: CPU per message is reported as 0 ("-").
func selfCPU() time.Duration { return 0 }
