//go:build !linux

package store

// dropMapped does nothing outside Linux: the mapped pages stay resident until the kernel
// reclaims them.
func dropMapped(uintptr, int64) {}
