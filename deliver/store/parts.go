package store

import (
	"hash/fnv"
	"math/bits"
)

// Partitions is how many parts the deliveries of every webhook are split
// into by entity id, so that several walhooks sharing a store can deliver
// side by side: each part is delivered by one walhook at a time (it holds
// the part's lease, see Postgres.Claim), and all deliveries of an entity
// fall into one part, so an entity's deliveries still go out in commit
// order whichever walhook sends them. Changing it moves entities between
// parts: it is part of the store's layout.
const Partitions = 32

// Parts is a set of partitions, a bit each.
type Parts uint32

// AllParts is every partition: a store on the local disk, or a walhook
// that delivers alone.
const AllParts = Parts(1<<Partitions - 1)

// PartOf is the partition of an entity id's deliveries.
func PartOf(entityID string) int {
	h := fnv.New32a()
	h.Write([]byte(entityID))
	return int(h.Sum32() % Partitions)
}

// Has reports whether part is in p.
func (p Parts) Has(part int) bool { return p&(1<<part) != 0 }

// Len is how many partitions p holds.
func (p Parts) Len() int { return bits.OnesCount32(uint32(p)) }

// List is p's partitions, ascending.
func (p Parts) List() []int16 {
	out := make([]int16, 0, p.Len())
	for i := range Partitions {
		if p.Has(i) {
			out = append(out, int16(i))
		}
	}
	return out
}

// partsOf is the set of the partitions in list.
func partsOf(list []int16) Parts {
	var p Parts
	for _, i := range list {
		p |= 1 << i
	}
	return p
}
