package dispatch

import (
	"strings"
	"testing"
)

// TestRing checks the FIFO against a model slice through growth, wrap-around and release.
func TestRing(t *testing.T) {
	tests := []struct {
		name string
		ops  string // p: push the next number, o: pop
	}{
		{"fill and drain", "pppppppppppooooooooooo"},
		{"wrap around", "pppppoooppppppppoppppppooooooooooooooo"},
		{"steady one", "popopopopopopopopopopo"},
		{"grow past keep", strings.Repeat("p", 300) + strings.Repeat("o", 300) + "ppoo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Ring[uint64]
			var model []uint64
			next := uint64(0)
			for k, op := range tt.ops {
				switch op {
				case 'p':
					next++
					q.Push(next)
					model = append(model, next)
				case 'o':
					got := q.Pop()
					if got != model[0] {
						t.Fatalf("op %d: pop = %d, want %d", k, got, model[0])
					}
					model = model[1:]
				}
				if q.Len() != len(model) {
					t.Fatalf("op %d: len = %d, want %d", k, q.Len(), len(model))
				}
			}
		})
	}
}
