package testutil

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// CryptoVectors mirrors internal/jobcrypt/testdata/vectors.json, made by
// testdata/make_vectors.py with python3-nacl and python3-cryptography: the
// independent implementation both jobcrypt (printer side) and marketsim
// (marketplace side) are checked against.
type CryptoVectors struct {
	Schema struct {
		ID string `json:"id"`
	} `json:"schema"`
	DEKPackages []struct {
		Name                string `json:"name"`
		RecipientPrivateHex string `json:"recipient_private_hex"`
		RecipientPublicB64  string `json:"recipient_public_b64"`
		EphemeralPrivateHex string `json:"ephemeral_private_hex"`
		EphemeralPublicB64  string `json:"ephemeral_public_b64"`
		NonceB64            string `json:"nonce_b64"`
		DEKKind             string `json:"dek_kind"`
		DEKHex              string `json:"dek_hex"`
		Package             string `json:"package"`
	} `json:"dek_packages"`
	DEKPackageErrors []struct {
		Name                string `json:"name"`
		RecipientPrivateHex string `json:"recipient_private_hex"`
		Package             string `json:"package"`
		Error               string `json:"error"`
		Segment             string `json:"segment"`
	} `json:"dek_package_errors"`
	CBC []struct {
		Name          string `json:"name"`
		KeyHex        string `json:"key_hex"`
		IVHex         string `json:"iv_hex"`
		PlaintextB64  string `json:"plaintext_b64"`
		CiphertextB64 string `json:"ciphertext_b64"`
	} `json:"cbc"`
	CBCErrors []struct {
		Name          string `json:"name"`
		KeyHex        string `json:"key_hex"`
		IVHex         string `json:"iv_hex"`
		CiphertextB64 string `json:"ciphertext_b64"`
		Error         string `json:"error"`
	} `json:"cbc_errors"`
	Fernet []struct {
		Name         string `json:"name"`
		Key          string `json:"key"`
		PlaintextB64 string `json:"plaintext_b64"`
		Token        string `json:"token"`
	} `json:"fernet"`
	FernetErrors []struct {
		Name  string `json:"name"`
		Key   string `json:"key"`
		Token string `json:"token"`
		Error string `json:"error"`
	} `json:"fernet_errors"`
}

// LoadCryptoVectors reads and checks jobcrypt's vector file. A missing or
// foreign file fails the test: the vectors are part of the suite.
func LoadCryptoVectors(t testing.TB) *CryptoVectors {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "jobcrypt", "testdata", "vectors.json"))
	if err != nil {
		t.Fatalf("the independent Python vectors are part of this test: %v", err)
	}
	var v CryptoVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.Schema.ID != "lmntd-jobcrypt-vectors/1" {
		t.Fatalf("vectors schema %q", v.Schema.ID)
	}
	return &v
}
