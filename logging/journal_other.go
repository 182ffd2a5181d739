//go:build !linux

package logging

import (
	"errors"
	"os"
)

// errNoJournal is returned where there is no journal to send to.
var errNoJournal = errors.New("journal: there is a journal on Linux only")

// socketSender has no journal to send to off Linux.
type socketSender struct{}

func newSocketSender(string) (*socketSender, error) { return nil, errNoJournal }

func (*socketSender) send([]byte) error { return errNoJournal }

// sameFile reports false: there is no journal stream off Linux.
func sameFile(*os.File, string, string) (bool, error) { return false, nil }
