package chaos

// Added latency without sch_netem. This machine's kernel (and CI's) has no
// netem, so delay and jitter are made by holding packets in userspace: an
// iptables NFQUEUE rule in the sending host's namespace hands every packet
// to a queue, and a delayer gives each one its ACCEPT verdict once its
// delay has passed. Only the verdict is exchanged (copy mode META): the
// packet stays in the kernel. Verdicts are batched ("accept every packet
// up to ID n"), and release times never go backwards, so a flow is not
// reordered (as netem with a rate): jitter varies the delay, TCP sees no
// spurious reordering. The queue fails open: should the delayer fall
// behind by more than its queue length, packets pass undelayed rather
// than vanish.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Netlink constants of linux/netfilter/nfnetlink_queue.h.
const (
	nfnlSubsysQueue   = 3
	nfqnlMsgPacket    = 0
	nfqnlMsgConfig    = 2
	nfqnlMsgVerdictB  = 3 // batch verdict
	nfqaPacketHdr     = 1
	nfqaVerdictHdr    = 2
	nfqaCfgCmd        = 1
	nfqaCfgParams     = 2
	nfqaCfgQueueMax   = 3
	nfqaCfgMask       = 4
	nfqaCfgFlags      = 5
	nfqnlCfgCmdBind   = 1
	nfqnlCopyMeta     = 1
	nfqaCfgFFailOpen  = 1
	nfqaCfgFGSO       = 4
	nfAccept          = 1
	delayerQueueLen   = 16384
	delayerRecvBuffer = 8 << 20
)

// delayer holds the packets of one NFQUEUE queue for delay ± jitter.
type delayer struct {
	fd     int
	queue  uint16
	delay  time.Duration
	jitter time.Duration

	rng  *rand.Rand // reader goroutine only
	last time.Time  // the latest release time handed out (reader only)

	held     chan heldPacket
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex // fd writes
	maxID    uint32     // the highest packet ID seen (under mu)
	closed   bool
}

type heldPacket struct {
	id      uint32
	release time.Time
}

// newDelayer binds queue in the network namespace at nsPath and starts
// releasing its packets after delay ± jitter.
func newDelayer(nsPath string, queue uint16, delay, jitter time.Duration, seed uint64) (*delayer, error) {
	fd, err := socketInNetns(nsPath)
	if err != nil {
		return nil, err
	}
	d := &delayer{fd: fd, queue: queue, delay: delay, jitter: jitter, rng: rand.New(rand.NewPCG(seed, uint64(queue))),
		held: make(chan heldPacket, delayerQueueLen), stop: make(chan struct{})}
	if err := d.configure(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	d.wg.Add(2)
	go d.read()
	go d.release()
	return d, nil
}

// socketInNetns opens a netfilter netlink socket inside the namespace
// (a socket belongs to the namespace it was made in).
func socketInNetns(nsPath string) (int, error) {
	fd := -1
	err := inNetns(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, delayerRecvBuffer)
	// Reads wake up now and then to see whether the delayer stopped.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return fd, nil
}

// inNetns runs fn on a thread inside the network namespace at nsPath
// (sockets fn makes belong to it), then returns the thread to its own.
func inNetns(nsPath string, fn func() error) error {
	runtime.LockOSThread()
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer own.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", nsPath, err)
	}
	ferr := fn()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the other namespace: it stays locked,
		// so it ends with this goroutine instead of running others.
		return fmt.Errorf("return from %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// configure binds the queue, asks for packet metadata only, lengthens the
// queue and makes it fail open, each acknowledged.
func (d *delayer) configure() error {
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0) // copy range: no payload
	params[4] = nfqnlCopyMeta
	steps := [][]byte{
		nlAttr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0}),
		nlAttr(nfqaCfgParams, params),
		// GSO: a large segment is queued whole instead of being cut to
		// MTU-sized packets first (the delayer never reads payloads), so a
		// fast flow costs a verdict per 64 KiB, not per 1.5 KiB.
		append(nlAttr(nfqaCfgQueueMax, be32(delayerQueueLen)), append(nlAttr(nfqaCfgMask, be32(nfqaCfgFFailOpen|nfqaCfgFGSO)),
			nlAttr(nfqaCfgFlags, be32(nfqaCfgFFailOpen|nfqaCfgFGSO))...)...),
	}
	for _, attrs := range steps {
		if err := unix.Sendto(d.fd, d.msg(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("nfqueue %d: configure: %w", d.queue, err)
		}
		if err := d.readAck(); err != nil {
			return fmt.Errorf("nfqueue %d: configure: %w", d.queue, err)
		}
	}
	return nil
}

func (d *delayer) readAck() error {
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(d.fd, buf, 0)
	if err != nil {
		return err
	}
	if n < unix.NLMSG_HDRLEN+4 || binary.LittleEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return errors.New("no netlink acknowledgement")
	}
	if code := int32(binary.LittleEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// msg is a netfilter netlink message for this queue.
func (d *delayer) msg(typ uint16, flags uint16, attrs []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
	b = append(b, attrs...)
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|typ)
	binary.LittleEndian.PutUint16(b[6:], flags)
	b[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC
	binary.BigEndian.PutUint16(b[unix.NLMSG_HDRLEN+2:], d.queue)
	return b
}

func nlAttr(typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b := make([]byte, (l+3)&^3)
	binary.LittleEndian.PutUint16(b[0:], uint16(l))
	binary.LittleEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// read takes packet notifications and schedules each packet's release.
func (d *delayer) read() {
	defer d.wg.Done()
	defer close(d.held)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil {
			// Timeouts let the loop see stop; ENOBUFS lost notifications,
			// whose packets the next batch verdict releases.
			continue
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.LittleEndian.Uint32(b[0:]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			if binary.LittleEndian.Uint16(b[4:]) == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				if id, ok := packetID(b[unix.NLMSG_HDRLEN+4 : l]); ok {
					d.schedule(id)
				}
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
}

func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.LittleEndian.Uint16(attrs[0:]))
		typ := binary.LittleEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[min(len(attrs), (l+3)&^3):]
	}
	return 0, false
}

func (d *delayer) schedule(id uint32) {
	delay := d.delay
	if d.jitter > 0 {
		delay += time.Duration(d.rng.Int64N(int64(2*d.jitter)+1)) - d.jitter
	}
	at := time.Now().Add(max(0, delay))
	if at.Before(d.last) {
		at = d.last // never reorder
	}
	d.last = at
	d.mu.Lock()
	d.maxID = max(d.maxID, id)
	d.mu.Unlock()
	select {
	case d.held <- heldPacket{id: id, release: at}:
	case <-d.stop:
	}
}

// release gives the held packets their verdicts when due: one batch
// verdict for all the packets that are due together.
func (d *delayer) release() {
	defer d.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// Packets due within slack of each other go out in one wake-up: a
	// fast flow would otherwise cost a timer wake-up per packet, which
	// bounds its rate well below the link's. The delay is then accurate
	// to slack (a tenth of it, at most 500µs).
	slack := min(d.delay/10, 500*time.Microsecond)
	until := func(at time.Time) bool {
		if wait := time.Until(at) - slack; wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-d.stop:
				return false
			}
		}
		return true
	}
	for p := range d.held {
		if !until(p.release) {
			return
		}
		last := p.id
		for more := true; more; {
			select {
			case q, ok := <-d.held:
				if !ok {
					more = false
					break
				}
				if time.Until(q.release) > slack {
					d.verdict(last)
					if !until(q.release) {
						return
					}
				}
				last = q.id
			default:
				more = false
			}
		}
		d.verdict(last)
	}
}

// verdict accepts every packet with an ID up to id.
func (d *delayer) verdict(id uint32) {
	hdr := append(be32(nfAccept), be32(id)...)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	unix.Sendto(d.fd, d.msg(nfqnlMsgVerdictB, unix.NLM_F_REQUEST, nlAttr(nfqaVerdictHdr, hdr)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// Close releases every packet still held and closes the queue. The rule
// that feeds the queue should be gone first. Idempotent.
func (d *delayer) Close() {
	d.stopOnce.Do(func() { close(d.stop) })
	d.wg.Wait()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.mu.Lock()
	maxID := d.maxID
	d.mu.Unlock()
	if maxID > 0 {
		d.verdict(maxID)
	}
	d.mu.Lock()
	d.closed = true
	unix.Close(d.fd)
	d.mu.Unlock()
}
