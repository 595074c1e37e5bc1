// A Go program as a user writes it: credentials from GOOGLE_APPLICATION_CREDENTIALS, then a token.
// The config keeps Google's real https://*.googleapis.com URLs (the Go client refuses others);
// for the tests every connection is dialled to STANDIN_TLS_ADDR on 127.0.0.1 and the stand-in's
// throwaway certificate (STANDIN_CA) is trusted. Prints one JSON line like the other clients.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

func report(ok bool, token string, err error) {
	out := map[string]interface{}{"ok": ok}
	if ok {
		out["token"] = token
	} else {
		out["error"] = err.Error()
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}

func main() {
	config, err := os.ReadFile(os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"))
	if err != nil {
		report(false, "", err)
		return
	}
	ca, err := os.ReadFile(os.Getenv("STANDIN_CA"))
	if err != nil {
		report(false, "", err)
		return
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	standin := os.Getenv("STANDIN_TLS_ADDR")
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", standin) // never anywhere but the local stand-in
		},
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Proxy:           nil,
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: transport, Timeout: 60 * time.Second})
	creds, err := google.CredentialsFromJSON(ctx, config, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		report(false, "", err)
		return
	}
	token, err := creds.TokenSource.Token()
	if err != nil {
		report(false, "", err)
		return
	}
	report(true, token.AccessToken, nil)
}
