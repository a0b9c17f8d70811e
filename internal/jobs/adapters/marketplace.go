package adapters

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lmnt-marketplace/lmntd/internal/jobs"
	"github.com/lmnt-marketplace/lmntd/internal/marketplace"
)

// Offer converts a polled job: the one place a job's download URL and key
// material cross from the marketplace client to the engine. They stay in
// memory.
func Offer(j marketplace.Job) jobs.Offer {
	o := jobs.Offer{ID: j.ID, PurchaseID: j.PurchaseID, DownloadURL: j.DownloadURL,
		Keys: jobs.KeyMaterial{DEKPackage: j.DEKPackage, IVHex: j.IVHex}}
	// The client has normalised created_at to RFC 3339 ("" when absent).
	if t, err := time.Parse(time.RFC3339Nano, j.CreatedAt); err == nil {
		o.CreatedAt = t
	}
	return o
}

// Offers converts a poll's jobs for Engine.Offer.
func Offers(js []marketplace.Job) []jobs.Offer {
	out := make([]jobs.Offer, 0, len(js))
	for _, j := range js {
		out = append(out, Offer(j))
	}
	return out
}

// Marketplace is the engine's jobs.Marketplace (and jobs.Refetcher).
type Marketplace struct {
	// Client returns the client to use now: the daemon rebuilds it when
	// its limits reload.
	Client func() *marketplace.Client
	// Track, when set, wraps each download's body (the daemon counts the
	// bytes for its status); size is the announced length, -1 unknown.
	Track func(jobID string, body io.ReadCloser, size int64) io.ReadCloser
}

// Download opens the job's body. The body implements jobs.SizedBody, so
// the engine reports the download's progress.
func (m Marketplace) Download(ctx context.Context, o jobs.Offer) (io.ReadCloser, error) {
	d, err := m.Client().Download(ctx, o.ID, o.DownloadURL)
	if err != nil {
		return nil, err
	}
	var body io.ReadCloser = d
	if m.Track != nil {
		body = m.Track(o.ID, d, d.Size)
	}
	return sizedBody{ReadCloser: body, size: d.Size}, nil
}

// sizedBody is a download with its announced length (jobs.SizedBody).
type sizedBody struct {
	io.ReadCloser
	size int64 // -1: unknown
}

func (s sizedBody) Size() int64 { return s.size }

// PostStatus makes one delivery attempt.
func (m Marketplace) PostStatus(ctx context.Context, jobID string, r jobs.Report) (jobs.Outcome, string, error) {
	res := m.Client().PostJobStatus(ctx, jobID, marketplace.StatusReport{Status: r.Status, Message: r.Message,
		FilamentUsed: r.FilamentUsed, PrintDuration: r.PrintDuration, TotalDuration: r.TotalDuration})
	answer := res.Answer
	if res.HTTPStatus != 0 {
		answer = fmt.Sprintf("HTTP %d: %s", res.HTTPStatus, res.Answer)
	}
	switch res.Outcome {
	case marketplace.Accepted:
		return jobs.Delivered, answer, nil
	case marketplace.Rejected:
		return jobs.Rejected, answer, res.Err
	default:
		return jobs.Retryable, answer, res.Err
	}
}

// Job fetches a job's keys again after a restart: the queue still lists a
// job the printer has not finished.
func (m Marketplace) Job(ctx context.Context, jobID string) (jobs.Offer, error) {
	js, err := m.Client().Poll(ctx)
	if err != nil {
		return jobs.Offer{}, err
	}
	for _, j := range js {
		if j.ID == jobID {
			return Offer(j), nil
		}
	}
	return jobs.Offer{}, fmt.Errorf("%w: %s is not in the print queue any more", jobs.ErrJobGone, jobID)
}
