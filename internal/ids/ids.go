// Package ids derives task and object IDs, shared by the raylet and the
// SDK. IDs are deterministic: a task's ID is a hash of its job, its parent
// task and the parent's submission counter, so a retried task (and every
// task it submits in the same order) gets the same IDs again. An object ID
// is its creating task's ID and an index: return values count from 1, Put
// objects have their own index space (the top bit set).
package ids

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// TaskIDSize and ObjectIDSize are the IDs' lengths in bytes.
const (
	TaskIDSize   = 16
	ObjectIDSize = TaskIDSize + 4
)

// putFlag marks the index of an object created by Put.
const putFlag = 1 << 31

// TaskID names one task (all its attempts).
type TaskID [TaskIDSize]byte

// ObjectID names one object.
type ObjectID [ObjectIDSize]byte

// DriverTaskID is the root task of a job's driver: the parent of the tasks
// the driver submits.
func DriverTaskID(jobID string) TaskID {
	return hashTask(jobID, TaskID{}, 0)
}

// NewTaskID derives the ID of the counter-th task (from 1) submitted by
// parent.
func NewTaskID(jobID string, parent TaskID, counter uint64) TaskID {
	return hashTask(jobID, parent, counter)
}

func hashTask(jobID string, parent TaskID, counter uint64) TaskID {
	h := sha256.New()
	h.Write([]byte(jobID))
	h.Write([]byte{0})
	h.Write(parent[:])
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	h.Write(c[:])
	var id TaskID
	copy(id[:], h.Sum(nil))
	return id
}

// ReturnID is the ID of a task's index-th return value (from 1).
func ReturnID(t TaskID, index uint32) ObjectID {
	return objectID(t, index&^putFlag)
}

// PutID is the ID of the index-th object (from 1) a task created by Put.
func PutID(t TaskID, index uint32) ObjectID {
	return objectID(t, index|putFlag)
}

func objectID(t TaskID, index uint32) ObjectID {
	var o ObjectID
	copy(o[:], t[:])
	binary.BigEndian.PutUint32(o[TaskIDSize:], index)
	return o
}

// Task is the task that created the object.
func (o ObjectID) Task() TaskID {
	var t TaskID
	copy(t[:], o[:TaskIDSize])
	return t
}

// Index is the object's return or Put index, without the Put flag.
func (o ObjectID) Index() uint32 { return binary.BigEndian.Uint32(o[TaskIDSize:]) &^ putFlag }

// IsPut says whether Put created the object.
func (o ObjectID) IsPut() bool { return binary.BigEndian.Uint32(o[TaskIDSize:])&putFlag != 0 }

func (o ObjectID) String() string { return hex.EncodeToString(o[:]) }
func (t TaskID) String() string   { return hex.EncodeToString(t[:]) }

// ObjectFromBytes reads an object ID off the wire.
func ObjectFromBytes(b []byte) (ObjectID, error) {
	var o ObjectID
	if len(b) != ObjectIDSize {
		return o, fmt.Errorf("object ID of %d bytes; want %d", len(b), ObjectIDSize)
	}
	copy(o[:], b)
	return o, nil
}

// TaskFromBytes reads a task ID off the wire.
func TaskFromBytes(b []byte) (TaskID, error) {
	var t TaskID
	if len(b) != TaskIDSize {
		return t, fmt.Errorf("task ID of %d bytes; want %d", len(b), TaskIDSize)
	}
	copy(t[:], b)
	return t, nil
}
