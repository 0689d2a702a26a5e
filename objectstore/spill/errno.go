package spill

import "syscall"

var (
	errNoSpace   = syscall.ENOSPC
	errDiskQuota = syscall.EDQUOT
)
