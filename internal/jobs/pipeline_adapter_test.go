package jobs

import (
	"fmt"
	"os"
)

// newPipelineDecryptor is the daemon's decryptor with the printer key read
// from a test key file (the daemon unseals it from the TPM or its sealed
// key file instead).
func newPipelineDecryptor(keyFile string) (Decryptor, error) {
	return PipelineDecryptor{PrivateKey: func() (*[32]byte, error) {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		if len(b) != 32 {
			return nil, fmt.Errorf("key file %s: %d bytes, want 32", keyFile, len(b))
		}
		var k [32]byte
		copy(k[:], b)
		clear(b)
		return &k, nil
	}}, nil
}
