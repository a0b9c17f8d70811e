package marketplace

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/lmnt-marketplace/lmntd/internal/redact"
)

// ProbeProfile asks the marketplace once which API era it speaks, for
// api_profile "auto" when the settings do not tell: an unauthenticated GET
// of the current profile's poll endpoint. A current server answers it (401
// without a token); a legacy server has no such path and answers 404. A
// network failure, a 5xx or a 429 (a proxy, an outage, a rate limit)
// decides nothing and is returned as an error.
func (c *Client) ProbeProfile(ctx context.Context) (Profile, string, error) {
	u := c.endpoint(profilePaths[ProfileCurrent].poll, nil)
	req, err := c.newRequest(ctx, http.MethodGet, u, nil, "")
	if err != nil {
		return "", "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("marketplace: probing %s: %w", redact.URL(u), redact.Error(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return ProfileLegacy, fmt.Sprintf("GET %s answered 404: no current-profile API there", u.Path), nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return "", "", fmt.Errorf("marketplace: probing %s: HTTP %d says nothing about the API era", redact.URL(u), resp.StatusCode)
	}
	return ProfileCurrent, fmt.Sprintf("GET %s answered %d: the current-profile API is there", u.Path, resp.StatusCode), nil
}
