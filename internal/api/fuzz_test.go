package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/lmnt-marketplace/lmntd/internal/apitype"
	"github.com/lmnt-marketplace/lmntd/internal/textsafe"
)

// recordingBackend accepts everything and remembers the first name that
// reached it uncleaned.
type recordingBackend struct {
	mu        sync.Mutex
	uncleaned string
}

func (b *recordingBackend) name(s string) {
	if textsafe.Clean(s, 0) != s {
		b.mu.Lock()
		b.uncleaned = s
		b.mu.Unlock()
	}
}

func (b *recordingBackend) Status(context.Context) apitype.Status { return apitype.Status{} }
func (b *recordingBackend) CheckJobs(context.Context) (apitype.JobStatus, error) {
	return apitype.JobStatus{}, nil
}
func (b *recordingBackend) RefreshToken(context.Context) (apitype.RefreshResult, error) {
	return apitype.RefreshResult{}, nil
}
func (b *recordingBackend) UserLogin(_ context.Context, _, _ string) (apitype.LoginResult, error) {
	return apitype.LoginResult{}, nil
}
func (b *recordingBackend) RegisterPrinter(_ context.Context, r apitype.RegisterRequest) (apitype.RegisterResult, error) {
	b.name(r.PrinterName)
	b.name(r.Manufacturer)
	b.name(r.Model)
	return apitype.RegisterResult{}, nil
}
func (b *recordingBackend) StartPairing(_ context.Context, r apitype.PairRequest) (apitype.Pairing, error) {
	b.name(r.PrinterName)
	b.name(r.Manufacturer)
	b.name(r.Model)
	return apitype.Pairing{}, nil
}
func (b *recordingBackend) PairingStatus(context.Context) (apitype.Pairing, error) {
	return apitype.Pairing{}, nil
}
func (b *recordingBackend) CompletePairing(context.Context) (apitype.Pairing, error) {
	return apitype.Pairing{}, nil
}
func (b *recordingBackend) SubmitLocal(_ context.Context, p LocalPrint) (string, error) {
	b.name(p.Name)
	return "local-1", nil
}
func (b *recordingBackend) Jobs() apitype.Snapshot { return apitype.Snapshot{} }
func (b *recordingBackend) CancelJob(_, reason string) error {
	b.name(reason)
	return nil
}
func (b *recordingBackend) ConfirmBedClear() error { return nil }
func (b *recordingBackend) Keys() apitype.KeysInfo { return apitype.KeysInfo{} }
func (b *recordingBackend) ImportLegacyKey(context.Context, apitype.ImportLegacyRequest) (apitype.ImportLegacyResult, error) {
	return apitype.ImportLegacyResult{}, nil
}
func (b *recordingBackend) Reseal(context.Context, string) (apitype.KeysInfo, error) {
	return apitype.KeysInfo{}, nil
}
func (b *recordingBackend) Doctor(context.Context, bool) apitype.DoctorReport {
	return apitype.DoctorReport{}
}
func (b *recordingBackend) RestartWhenIdle() apitype.RestartResult { return apitype.RestartResult{} }

// jsonEndpoints are the POST endpoints that read a JSON body.
var jsonEndpoints = []string{
	pluginPrefix + "/user_login",
	pluginPrefix + "/register_printer",
	pluginPrefix + "/pair/start",
	v1Prefix + "/jobs/cancel",
	v1Prefix + "/keys/import-legacy",
	v1Prefix + "/keys/reseal",
	v1Prefix + "/restart",
}

// FuzzJSONBodies posts arbitrary bodies to every endpoint that decodes
// JSON, as a caller on the API socket. The API never panics and never
// answers 5xx to a body: it accepts, or refuses with a JSON error and a 4xx;
// every name that reaches the backend is clean (textsafe). Seeds: a valid
// and a hostile body per endpoint, and testdata/fuzz/FuzzJSONBodies.
func FuzzJSONBodies(f *testing.F) {
	for i, body := range []string{
		`{"username":"a@b.c","password":"x"}`,
		`{"user_token":"t","printer_name":"P\u202eexe.gcode","manufacturer":"\u001b[2J","model":"m"}`,
		`{"printer_name":"Voron\n2.4","extruder_count":2,"force":true}`,
		`{"id":"job-1","reason":"\u2066owner\u2069"}`,
		`{"dir":"/home/pi/printer_data/lmnt_marketplace","remove_source":true,"replace":true}`,
		`{"to":"tpm"}`,
		`{"when_idle":true}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Add(uint8(2), []byte(`{"printer_name":`))
	f.Add(uint8(3), []byte(`{"id":"x","id":"y","extra":1}`))
	f.Add(uint8(5), []byte(`["tpm"]`))
	f.Add(uint8(6), []byte(`{"when_idle":"yes"}{"when_idle":true}`))

	b := &recordingBackend{}
	s := New(Options{Backend: b, PairingBurst: 1 << 30})
	root := &peer{unix: true} // uid 0
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := jsonEndpoints[int(which)%len(jsonEndpoints)]
		r := httptest.NewRequest(http.MethodPost, "http://lmntd"+path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r = withTestPeer(r, root)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code >= 500 || w.Code < 200 || w.Code >= 300 && w.Code < 400 {
			t.Fatalf("%s %q: status %d %s", path, body, w.Code, w.Body)
		}
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s %q: answer is not JSON: %s", path, body, w.Body)
		}
		if _, isErr := answer["error"]; (w.Code >= 400) != isErr {
			t.Fatalf("%s %q: status %d with body %s", path, body, w.Code, w.Body)
		}
		b.mu.Lock()
		bad := b.uncleaned
		b.mu.Unlock()
		if bad != "" {
			t.Fatalf("%s %q: the backend got the uncleaned name %q", path, body, bad)
		}
	})
}
