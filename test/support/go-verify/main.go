// Command go-verify verifies a certificate chain with Go's crypto/x509, as a Go service (gRPC,
// net/http, go-spiffe) would: go-verify ROOTS.pem CHAIN.pem, where CHAIN.pem holds the leaf first
// and then the intermediates. The chain must verify for both serverAuth and clientAuth. It prints
// "OK" and the path on success; otherwise the verifier's error, with exit status 1.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

func certificates(path string) []*x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			fmt.Println("parse:", err)
			os.Exit(1)
		}
		out = append(out, c)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Println("usage: go-verify ROOTS.pem CHAIN.pem")
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	for _, c := range certificates(os.Args[1]) {
		roots.AddCert(c)
	}
	chain := certificates(os.Args[2])
	if len(chain) == 0 {
		fmt.Println("no certificate in", os.Args[2])
		os.Exit(1)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		paths, err := chain[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		if usage == x509.ExtKeyUsageServerAuth {
			fmt.Print("OK")
			for _, c := range paths[0] {
				fmt.Printf(" <- %s", c.Subject)
			}
			fmt.Println()
		}
	}
}
