package daemon

import (
	"sync"

	"github.com/lmnt-marketplace/lmntd/internal/api"
	"github.com/lmnt-marketplace/lmntd/internal/gcode"
)

// previewsKept bounds the previews held: the active job and a few recent
// ones (a thumbnail is at most gcode.DefaultMaxThumbnailBytes).
const previewsKept = 4

// previewStore holds what the status page shows of recent jobs: the
// slicer's thumbnail and time estimate. In memory only: the thumbnail is
// part of the creator's G-code and is never written to disk.
type previewStore struct {
	mu    sync.Mutex
	byJob map[string]api.JobPreview
	order []string // oldest first
}

func (p *previewStore) put(jobID string, m *gcode.Metadata) {
	if m == nil {
		return
	}
	pv := api.JobPreview{EstimatedTime: m.EstimatedTime}
	if t, ok := pickThumbnail(m.Thumbnails); ok {
		pv.Thumbnail, pv.ThumbnailType = t.Data, "image/png"
		if t.Format == gcode.FormatJPG {
			pv.ThumbnailType = "image/jpeg"
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byJob == nil {
		p.byJob = map[string]api.JobPreview{}
	}
	if _, seen := p.byJob[jobID]; !seen {
		p.order = append(p.order, jobID)
	}
	p.byJob[jobID] = pv
	for len(p.order) > previewsKept {
		delete(p.byJob, p.order[0])
		p.order = p.order[1:]
	}
}

func (p *previewStore) get(jobID string) (api.JobPreview, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pv, ok := p.byJob[jobID]
	return pv, ok
}

// pickThumbnail chooses what a browser can show (PNG or JPEG, not QOI):
// the largest up to 600 px wide, else the smallest larger one.
func pickThumbnail(ts []gcode.Thumbnail) (gcode.Thumbnail, bool) {
	var best gcode.Thumbnail
	found := false
	for _, t := range ts {
		if t.Format != gcode.FormatPNG && t.Format != gcode.FormatJPG {
			continue
		}
		switch {
		case !found:
			best, found = t, true
		case best.Width > 600 && t.Width < best.Width:
			best = t
		case t.Width <= 600 && t.Width > best.Width:
			best = t
		}
	}
	return best, found
}

// JobPreview serves the status page (api.PreviewSource).
func (b backend) JobPreview(jobID string) (api.JobPreview, bool) { return b.d.previews.get(jobID) }
