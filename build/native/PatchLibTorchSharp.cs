using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;

// MSBuild inline task (compiled by RoslynCodeTaskFactory): makes TorchSharp's libLibTorchSharp.so loadable on
// hosts whose libstdc++ predates GCC 13. See build/TorchSharpNativeCompat.targets and docs/torchsharp-native-linux.md.
public class GohspPatchLibTorchSharp : Microsoft.Build.Utilities.Task
{
    const string Symbol = "_ZSt21ios_base_library_initv";
    const string Version = "GLIBCXX_3.4.32";
    const string Shim = "libstdcxx_compat.so";

    public string[] Directories { get; set; }
    public string ShimSource { get; set; }

    public override bool Execute()
    {
        var libs = Directories.Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d, "libLibTorchSharp.so", SearchOption.AllDirectories))
            .Distinct().ToList();
        if (libs.Count == 0) return true;

        string hostLib;
        bool? hostHasVersion = HostLibStdCxxHas(Version, out hostLib);
        if (hostHasVersion == null)
        {
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                "TorchSharp native compat: no libstdc++.so.6 found on this host; leaving libLibTorchSharp.so untouched.");
            return true;
        }
        if (hostHasVersion == true) return true; // new libstdc++ (GCC >= 13): nothing to do

        foreach (var lib in libs)
        {
            try
            {
                if (!PatchOne(lib, hostLib)) return false;
            }
            catch (Exception ex)
            {
                Log.LogError("TorchSharp native compat: could not patch {0}: {1}", lib, ex.Message);
                return false;
            }
        }
        return true;
    }

    bool PatchOne(string lib, string hostLib)
    {
        string dir = Path.GetDirectoryName(lib);
        string shim = Path.Combine(dir, Shim);
        byte[] elf = File.ReadAllBytes(lib);
        long flagOffset = FindVernauxFlagsOffset(elf, Version);
        bool weak = flagOffset >= 0 && (BitConverter.ToUInt16(elf, (int)flagOffset) & 0x2) != 0;
        if (flagOffset < 0 || (weak && File.Exists(shim)))
            return true; // does not need the version, or already patched

        Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
            "TorchSharp native compat: {0} lacks {1}; patching {2}", hostLib, Version, lib);

        BreakHardLink(lib);
        if (!File.Exists(shim))
        {
            if (!File.Exists(ShimSource)) { Log.LogError("TorchSharp native compat: shim source not found: {0}", ShimSource); return false; }
            if (!Run("cc", "-shared -fPIC -O2 -o \"" + shim + "\" \"" + ShimSource + "\"",
                "a C compiler ('cc') is needed to build the libstdc++ compatibility shim (install it: sudo apt-get install gcc, or dnf/yum install gcc)")) return false;
        }
        string needed;
        if (!Run("patchelf", "--print-needed \"" + lib + "\"", PatchelfHint, out needed)) return false;
        if (!Run("patchelf", "--clear-symbol-version " + Symbol + " \"" + lib + "\"", PatchelfHint)) return false;
        if (!needed.Split('\n').Any(l => l.Trim() == Shim))
            if (!Run("patchelf", "--add-needed " + Shim + " \"" + lib + "\"", PatchelfHint)) return false;
        if (!Run("patchelf", "--set-rpath \"$ORIGIN\" \"" + lib + "\"", PatchelfHint)) return false;

        // patchelf may have moved sections: read again, then set VER_FLG_WEAK on the requirement in place.
        elf = File.ReadAllBytes(lib);
        flagOffset = FindVernauxFlagsOffset(elf, Version);
        if (flagOffset >= 0)
        {
            ushort flags = BitConverter.ToUInt16(elf, (int)flagOffset);
            flags |= 0x2;
            using (var fs = new FileStream(lib, FileMode.Open, FileAccess.Write))
            {
                fs.Position = flagOffset;
                fs.WriteByte((byte)(flags & 0xff));
                fs.WriteByte((byte)(flags >> 8));
            }
        }
        return true;
    }

    // The build may hard-link package files into the output (CreateHardLinksForCopyLocalIfPossible); patchelf and the
    // flag write below change the file in place, which would change the NuGet cache's copy too. Give the output its own
    // copy first: write it beside the file, then rename it over the link.
    static void BreakHardLink(string path)
    {
        string copy = path + ".gohsp-unlink";
        File.Copy(path, copy, true);
        File.Replace(copy, path, null);
    }

    const string PatchelfHint = "'patchelf' is needed to make TorchSharp load on this host's libstdc++ (install it: sudo apt-get install patchelf, or dnf/yum install patchelf)";

    bool Run(string exe, string args, string hint) { string o; return Run(exe, args, hint, out o); }

    bool Run(string exe, string args, string hint, out string stdout)
    {
        stdout = "";
        Process p;
        try
        {
            p = Process.Start(new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false });
        }
        catch (Exception)
        {
            Log.LogError("TorchSharp native compat: '{0}' not found: {1}.", exe, hint);
            return false;
        }
        stdout = p.StandardOutput.ReadToEnd();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            Log.LogError("TorchSharp native compat: '{0} {1}' failed ({2}): {3}", exe, args, p.ExitCode, err.Trim());
            return false;
        }
        return true;
    }

    // null: no libstdc++ found; otherwise whether it defines the given symbol version.
    static bool? HostLibStdCxxHas(string version, out string path)
    {
        path = null;
        var candidates = new System.Collections.Generic.List<string>();
        try
        {
            var p = Process.Start(new ProcessStartInfo("/sbin/ldconfig", "-p") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false });
            string o = p.StandardOutput.ReadToEnd(); p.WaitForExit();
            foreach (var line in o.Split('\n'))
                if (line.Contains("libstdc++.so.6 ") && line.Contains("x86-64") && line.Contains("=> "))
                    candidates.Add(line.Substring(line.IndexOf("=> ") + 3).Trim());
        }
        catch (Exception) { }
        candidates.AddRange(new[] { "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" });
        path = candidates.FirstOrDefault(File.Exists);
        if (path == null) return null;
        byte[] data = File.ReadAllBytes(path);
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        for (int i = 0; i + needle.Length <= data.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && data[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }

    // File offset of vna_flags of the .gnu.version_r auxiliary entry naming 'version', or -1.
    static long FindVernauxFlagsOffset(byte[] e, string version)
    {
        if (e.Length < 64 || e[0] != 0x7f || e[1] != (byte)'E' || e[4] != 2 || e[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        long shoff = BitConverter.ToInt64(e, 0x28);
        int shentsize = BitConverter.ToUInt16(e, 0x3A);
        int shnum = BitConverter.ToUInt16(e, 0x3C);
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            uint type = BitConverter.ToUInt32(e, (int)sh + 4);
            if (type != 0x6ffffffe) continue; // SHT_GNU_verneed
            long off = BitConverter.ToInt64(e, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(e, (int)sh + 0x28);
            int count = (int)BitConverter.ToUInt32(e, (int)sh + 0x2C);
            long strOff = BitConverter.ToInt64(e, (int)(shoff + (long)link * shentsize) + 0x18);
            long vn = off;
            for (int i = 0; i < count; i++)
            {
                int cnt = BitConverter.ToUInt16(e, (int)vn + 2);
                long aux = vn + BitConverter.ToUInt32(e, (int)vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    long nameOff = strOff + BitConverter.ToUInt32(e, (int)aux + 8);
                    int end = (int)nameOff; while (e[end] != 0) end++;
                    if (Encoding.ASCII.GetString(e, (int)nameOff, end - (int)nameOff) == version) return aux + 4;
                    aux += BitConverter.ToUInt32(e, (int)aux + 12);
                }
                vn += BitConverter.ToUInt32(e, (int)vn + 12);
            }
        }
        return -1;
    }
}
