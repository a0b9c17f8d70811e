package daemon

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/identity"
	"github.com/lmnt-marketplace/lmntd/internal/jobcrypt"
	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/pipeline"
)

// decryptor adapts the pipeline to the engine. The printer's private key is
// used only inside the key source, under the keyring's read lock, so a key
// import cannot wipe it mid-use.
type decryptor struct{ d *daemon }

func (p *decryptor) Prepare(ctx context.Context, jobID string, body io.Reader, keys jobs.KeyMaterial) (*jobs.Prepared, error) {
	in := pipeline.Input{Body: body, Name: "lmnt-" + jobID, Logger: p.d.log}
	switch {
	case keys.DEKPackage != "":
		pkg := keys.DEKPackage
		in.Key = func() (*jobcrypt.DEK, error) {
			var dek *jobcrypt.DEK
			err := p.d.keys.with(func(k *identity.Key) error {
				var err error
				dek, err = pipeline.DEKPackage(pkg, k.Private())()
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
		return nil, err
	}
	p.d.previews.put(jobID, res.Metadata)
	p.d.metrics.Decrypted(res.Size, time.Since(start))
	return &jobs.Prepared{File: res.File, Size: res.Size, Metadata: jobs.MetadataFromGcode(res.Metadata)}, nil
}
