package store

import "syscall"

// dropMapped tells the kernel that the size bytes mapped at addr are not needed in this
// process (madvise MADV_DONTNEED): for a shared file mapping the pages leave the process's
// resident set and stay in the page cache. Errors are ignored; the pages simply stay.
func dropMapped(addr uintptr, size int64) {
	if addr == 0 || size <= 0 {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(size), syscall.MADV_DONTNEED)
}
