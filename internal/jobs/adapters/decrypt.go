package adapters

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/gcode"
	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/pipeline"
)

// Decryptor is the engine's jobs.Decryptor: the decrypt pipeline (jobcrypt
// → G-code gate → sealed memfd).
type Decryptor struct {
	// WithKey runs use with the printer's X25519 private key and keeps the
	// key alive until use returns (the daemon holds its keyring's read
	// lock, so a key import cannot wipe the key mid-use). The key is used
	// only inside use, to open the job's DEK package; its error fails the
	// job.
	WithKey func(use func(priv *[32]byte) error) error
	Logger  *slog.Logger
	// Decrypted, when set, is told of each job decrypted: its metadata,
	// size and how long the pipeline took (the daemon keeps the preview
	// and counts metrics), with its thumbnails; it must not change m.
	Decrypted func(jobID string, m *gcode.Metadata, size int64, took time.Duration)
}

// Prepare decrypts and gates body into a sealed memfd.
func (p Decryptor) Prepare(ctx context.Context, jobID string, body io.Reader, keys jobs.KeyMaterial) (*jobs.Prepared, error) {
	in := pipeline.Input{Body: body, Name: "lmnt-" + jobID, Logger: p.Logger}
	switch {
	case keys.DEKPackage != "":
		pkg := keys.DEKPackage
		in.Key = func() (*jobcrypt.DEK, error) {
			var dek *jobcrypt.DEK
			err := p.WithKey(func(priv *[32]byte) error {
				var err error
				dek, err = pipeline.DEKPackage(pkg, priv)()
				return err
			})
			return dek, err
		}
	case keys.FernetKey != "":
		in.Key = pipeline.FernetKey(keys.FernetKey)
	}
	if keys.IVHex != "" {
		iv, err := jobcrypt.ParseIVHex(keys.IVHex)
		if err != nil {
			return nil, fmt.Errorf("the job's IV: %w", err)
		}
		in.IV = &iv
	}
	start := time.Now()
	res, err := pipeline.Run(ctx, in)
	if err != nil {
		return nil, classify(err)
	}
	if p.Decrypted != nil {
		p.Decrypted(jobID, res.Metadata, res.Size, time.Since(start))
	}
	// The engine holds the metadata for the whole print; it needs no
	// thumbnails (the stub is built from the file), so they are not kept.
	var md *gcode.Metadata
	if res.Metadata != nil {
		m := *res.Metadata
		m.Thumbnails = nil
		md = &m
	}
	return &jobs.Prepared{File: res.File, Size: res.Size, Metadata: md}, nil
}

// classify marks the pipeline's failures that say nothing about the
// plaintext for the engine (jobs.UnreadableBody, jobs.NoMemory); every
// other failure stays unmarked and becomes a verification failure.
func classify(err error) error {
	var pe *pipeline.Error
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Stage {
	case pipeline.StageRead:
		return jobs.UnreadableBody(err)
	case pipeline.StageMemfd:
		return jobs.NoMemory(err)
	}
	return err
}
