package blobcrypt_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/unibus/unibus/blobcrypt"
)

// Encrypt a file's contents with a fresh key, then decrypt them. The key
// travels to the receiver inside an encrypted room message.
func Example() {
	key, err := blobcrypt.NewKey()
	if err != nil {
		log.Fatal(err)
	}
	var ciphertext bytes.Buffer
	w, err := blobcrypt.NewWriter(&ciphertext, key)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(w, strings.NewReader("meeting notes\n")); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil { // writes the final chunk
		log.Fatal(err)
	}
	fmt.Println(ciphertext.Len() == int(blobcrypt.CiphertextSize(14)))

	r, err := blobcrypt.NewReader(&ciphertext, key)
	if err != nil {
		log.Fatal(err)
	}
	plaintext, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err) // ErrTruncated, ErrAuth, …: never use what was read
	}
	fmt.Print(string(plaintext))
	// Output:
	// true
	// meeting notes
}

// A download cut exactly at a chunk boundary is detected: the last chunk
// that arrived was not sealed as the final one.
func ExampleNewReader_truncated() {
	key, _ := blobcrypt.NewKey()
	var ciphertext bytes.Buffer
	w, _ := blobcrypt.NewWriter(&ciphertext, key)
	w.Write(make([]byte, 3*blobcrypt.ChunkSize))
	w.Close()
	cut := ciphertext.Bytes()[:blobcrypt.CiphertextSize(2*blobcrypt.ChunkSize)] // two full chunks, no final one

	r, _ := blobcrypt.NewReader(bytes.NewReader(cut), key)
	_, err := io.ReadAll(r)
	fmt.Println(errors.Is(err, blobcrypt.ErrTruncated))
	fmt.Println(err)
	// Output:
	// true
	// blob ciphertext is truncated: final chunk missing (it ends after chunk 1, which is not the final one)
}

// CiphertextSize gives the exact upload size before encrypting, for a
// Content-Length header or a size limit.
func ExampleCiphertextSize() {
	for _, n := range []int64{0, 5, blobcrypt.ChunkSize, blobcrypt.ChunkSize + 1} {
		fmt.Println(n, blobcrypt.CiphertextSize(n))
	}
	// Output:
	// 0 47
	// 5 52
	// 65536 65583
	// 65537 65600
}
