package spool

// ranges are the seqs of undelivered messages on disk, as ascending runs of
// consecutive seqs. A sync writes one run (what memory held, in order), so
// gaps appear only where messages were delivered from memory between two
// syncs, and an outage's backlog is a single run however large it grows.
type ranges []seqRange

type seqRange struct{ lo, hi uint64 }

// add appends seq, which is above every seq already held.
func (r *ranges) add(seq uint64) { r.addRange(seq, seq) }

// addRange appends lo..hi, above every seq already held.
func (r *ranges) addRange(lo, hi uint64) {
	if n := len(*r); n > 0 && (*r)[n-1].hi+1 == lo {
		(*r)[n-1].hi = hi
		return
	}
	*r = append(*r, seqRange{lo, hi})
}

// count is how many seqs are held.
func (r ranges) count() uint64 {
	var n uint64
	for _, x := range r {
		n += x.hi - x.lo + 1
	}
	return n
}

// countTo is how many held seqs are <= seq.
func (r ranges) countTo(seq uint64) uint64 {
	var n uint64
	for _, x := range r {
		if x.lo > seq {
			break
		}
		n += min(x.hi, seq) - x.lo + 1
	}
	return n
}

// trimTo removes every seq <= seq and returns how many it removed.
func (r *ranges) trimTo(seq uint64) uint64 {
	var n uint64
	i := 0
	for ; i < len(*r); i++ {
		x := &(*r)[i]
		if x.lo > seq {
			break
		}
		if x.hi > seq {
			n += seq - x.lo + 1
			x.lo = seq + 1
			break
		}
		n += x.hi - x.lo + 1
	}
	*r = append((*r)[:0], (*r)[i:]...)
	return n
}
